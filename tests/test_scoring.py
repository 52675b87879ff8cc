"""The score stage on real Spark and Delta: UDF = in-process predict, rollup = sum over users,
idempotent reruns beside another model's scores, refusal of a model that does not fit, drift."""
from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from demandcast.config import load_config
from demandcast.errors import ConfigError, DataQualityError, StageFailed
from demandcast.tables import TableSpec, current_version, read_table, table_path, write_table
from training.scoring.drift import (NULL_BIN, OTHER_BIN, ReferenceProfile, bin_counts, feature_drift,
                            psi, reference_profile)
from training.scoring.stage import run_score
from training.scoring.udf import input_mismatches

from scoring_fixtures import (CATEGORIES, CREATED, N_USERS, SNAPSHOTS, feature_frame,
                              load_linear_model, save_linear_model, scored_world,  # noqa: F401
                              write_features, write_models_table)

CATEGORY_COLUMNS = [f"p_category_{c}" for c in CATEGORIES]


def _config(project_root, warehouse, tmp_path, *overrides):
    return load_config(project_root / "conf" / "local.yaml", [
        f"warehouse={warehouse}", f"runs_dir={tmp_path / 'runs'}", *overrides])


def test_scores_equal_in_process_predict_and_rollup_is_the_sum(spark, scored_world):
    summary, current = scored_world["summary"], scored_world["current"]
    warehouse = scored_world["warehouse"]
    # The champion, although retired m1 has the higher val_roc_auc (another validation set).
    assert summary["model_version"] == "m2"
    assert summary["snapshot_date"] == str(SNAPSHOTS[1]) and summary["users_scored"] == N_USERS

    got = (read_table(spark, warehouse, "predictions").where("model_version = 'm2'").toPandas()
           .set_index("user_key"))
    model = load_linear_model(str(scored_world["m2"]))
    want = model.predict(current.set_index("user_key"))
    got = got.loc[want.index]
    assert len(got) == N_USERS
    np.testing.assert_allclose(got["p_purchase"], want["p_purchase"], rtol=0, atol=1e-6)
    np.testing.assert_allclose(got["expected_spend"], want["expected_spend"], rtol=0, atol=1e-6)

    # Top categories: the 3 best category scores of the same predict, best first.
    for key in want.index[:50]:
        expected = want.loc[key, CATEGORY_COLUMNS].sort_values(ascending=False, kind="stable")[:3]
        top = got.loc[key, "top_categories"]
        assert ["p_category_" + t["category_id"] for t in top] == list(expected.index)
        np.testing.assert_allclose([t["score"] for t in top], expected.values, atol=1e-6)

    # Deciles: 1 holds the highest propensities, each decile about a tenth of the users.
    by_decile = got.groupby("decile")["p_purchase"]
    assert sorted(by_decile.groups) == list(range(1, 11))
    assert (by_decile.min().shift(-1).dropna() <= by_decile.min()[:-1] + 1e-12).all()
    assert by_decile.size().between(N_USERS / 10 - 8, N_USERS / 10 + 8).all()

    # category_demand = sums over users of the in-process per-user expectations.
    demand = (read_table(spark, warehouse, "category_demand").where("model_version = 'm2'")
              .toPandas().set_index("category_id"))
    scores = want[CATEGORY_COLUMNS].to_numpy()
    allotted = scores / scores.sum(axis=1, keepdims=True) * want["expected_spend"].to_numpy()[:, None]
    np.testing.assert_allclose(demand.loc[CATEGORIES, "expected_buyers"], scores.sum(axis=0),
                               rtol=1e-9)
    np.testing.assert_allclose(demand.loc[CATEGORIES, "expected_revenue"], allotted.sum(axis=0),
                               rtol=1e-9)
    assert (demand["n_users"] == N_USERS).all() and (demand["model_version"] == "m2").all()
    # Revenue allotment keeps each user's total: categories add up to the expected spend.
    assert demand["expected_revenue"].sum() == pytest.approx(want["expected_spend"].sum(), rel=1e-9)


def test_drivers_for_the_explained_subset_only(spark, scored_world):
    predictions = (read_table(spark, scored_world["warehouse"], "predictions")
                   .where("model_version = 'm2'").toPandas().set_index("user_key"))
    explained = predictions[predictions["drivers"].notna()]
    assert "key00007" in explained.index  # the requested user
    assert 5 <= len(explained) <= 120  # plus a ~10% hash sample, not everybody
    assert scored_world["summary"]["users_explained"] == len(explained)

    # The recorded contribution is p(user) - p(user with the group at its training median).
    model = load_linear_model(str(scored_world["m2"]))
    row = scored_world["current"].set_index("user_key").loc[["key00007"]]
    base = model.predict(row)["p_purchase"].iloc[0]
    train = scored_world["train"]
    for driver in predictions.loc["key00007", "drivers"]:
        occluded = row.copy()
        if driver["feature_group"] == "recency":
            occluded["days_since_last_purchase"] = train["days_since_last_purchase"].median()
            assert driver["contribution"] == pytest.approx(
                base - model.predict(occluded)["p_purchase"].iloc[0], abs=0.02)
    groups = {d["feature_group"] for d in predictions.loc["key00007", "drivers"]}
    assert groups <= {"recency", "activity", "region", "device"} and len(groups) == 3

    import json
    report = json.loads(open(scored_world["summary"]["report"]).read())
    assert {g["feature_group"] for g in report["global_importance"]} == \
        {"recency", "activity", "region", "device"}
    # Session counts were shifted between the snapshots: the drift check flags them.
    assert "sessions_last_7d" in scored_world["summary"]["drift_warnings"]
    assert "device" not in scored_world["summary"]["drift_warnings"]


def test_a_feature_group_naming_no_feature_column_stops_scoring_before_any_write(spark, scored_world):
    cfg, warehouse = scored_world["cfg"], scored_world["warehouse"]
    paths = {t: table_path(warehouse, t) for t in ("predictions", "category_demand")}
    before = {t: current_version(spark, p) for t, p in paths.items()}
    typo = cfg.model_copy(update={"score": cfg.score.model_copy(update={
        "force": True, "feature_groups": {"recency": ["days_since_last_purchse"],
                                          "activity": ["purchases_last_30d"]}})})
    with pytest.raises(ConfigError, match=r"score\.feature_groups\.recency: \['days_since_last_purchse'\]$"):
        run_score(spark, typo, loader=load_linear_model)
    assert {t: current_version(spark, p) for t, p in paths.items()} == before


def test_rerun_is_idempotent_and_keeps_the_other_models_scores(spark, scored_world):
    cfg, warehouse = scored_world["cfg"], scored_world["warehouse"]
    paths = {t: table_path(warehouse, t) for t in ("predictions", "category_demand")}
    before = {t: current_version(spark, p) for t, p in paths.items()}
    first = (read_table(spark, warehouse, "predictions").where("model_version = 'm2'")
             .drop("scored_at").toPandas())

    again = run_score(spark, cfg, loader=load_linear_model)
    assert again["skipped"] == "already scored"
    assert {t: current_version(spark, p) for t, p in paths.items()} == before

    # A forced rescore replaces its own partition with the same rows; m1's scores stay beside.
    forced = cfg.model_copy(update={"score": cfg.score.model_copy(update={"force": True})})
    rerun = run_score(spark, forced, loader=load_linear_model)
    assert rerun["predictions_version"] == before["predictions"] + 1

    now = read_table(spark, warehouse, "predictions")
    counts = {r.model_version: r["count"] for r in now.groupBy("model_version").count().collect()}
    assert counts == {"m1": N_USERS, "m2": N_USERS}
    m2_again = now.where("model_version = 'm2'").drop("scored_at").toPandas()
    key = ["user_key"]
    pd.testing.assert_frame_equal(first.sort_values(key).reset_index(drop=True),
                                  m2_again.sort_values(key).reset_index(drop=True))
    demand = read_table(spark, warehouse, "category_demand")
    assert demand.count() == 2 * len(CATEGORIES)

    # user_features rewritten after the scoring (a rebuild): the scores may be stale, so a run
    # without force scores the snapshot again instead of calling it done.
    write_features(spark, warehouse, [scored_world["train"], scored_world["current"]])
    refreshed = run_score(spark, cfg, loader=load_linear_model)
    assert "skipped" not in refreshed
    assert refreshed["predictions_version"] == rerun["predictions_version"] + 1


def test_model_that_does_not_fit_the_features_is_refused(spark, warehouse, tmp_path, project_root):
    train = feature_frame(50, SNAPSHOTS[0], seed=1)
    write_features(spark, warehouse, [train])
    inputs = {"days_since_last_purchase": "numeric", "loyalty_tier": "categorical",
              "region": "numeric"}
    model_dir = save_linear_model(tmp_path / "runs" / "models" / "bad",
                                  train.assign(loyalty_tier="gold", region=1.0), seed=3,
                                  inputs=inputs)
    write_models_table(spark, warehouse, [("bad", 0.5, str(model_dir), SNAPSHOTS[0], CREATED)])
    cfg = _config(project_root, warehouse, tmp_path)
    with pytest.raises(StageFailed) as err:
        run_score(spark, cfg, loader=load_linear_model)
    message = str(err.value)
    assert "missing column 'loyalty_tier'" in message
    assert "column 'region' must be numeric, is string" in message
    assert current_version(spark, table_path(warehouse, "predictions")) is None
    assert current_version(spark, table_path(warehouse, "category_demand")) is None


def test_rows_without_a_key_are_not_called_duplicates(spark, warehouse, tmp_path, project_root):
    frame = feature_frame(40, SNAPSHOTS[0], seed=2)
    frame.loc[[0, 1], "user_key"] = None
    frame.loc[2, "user_key"] = frame.loc[3, "user_key"]
    write_features(spark, warehouse, [frame])
    model_dir = save_linear_model(tmp_path / "runs" / "models" / "m", frame, seed=3)
    write_models_table(spark, warehouse, [("m", 0.5, str(model_dir), SNAPSHOTS[0], CREATED)])
    with pytest.raises(DataQualityError, match="the feature snapshot has 2 rows without a user_key "
                                               "and 1 duplicate user_key rows; nothing was written"):
        run_score(spark, _config(project_root, warehouse, tmp_path), loader=load_linear_model)
    assert current_version(spark, table_path(warehouse, "predictions")) is None



def test_a_published_table_of_another_schema_stops_scoring_before_any_write(
        spark, warehouse, tmp_path, project_root):
    """category_demand made by another version: predictions must not be published alone (the
    two tables are two commits), and nothing is scored to find out."""
    frame = feature_frame(40, SNAPSHOTS[0], seed=2)
    write_features(spark, warehouse, [frame])
    model_dir = save_linear_model(tmp_path / "runs" / "models" / "m", frame, seed=3)
    write_models_table(spark, warehouse, [("m", 0.5, str(model_dir), SNAPSHOTS[0], CREATED)])
    spark.createDataFrame([(SNAPSHOTS[0], "m", "c1", 1)], "snapshot_date date, model_version string, "
                          "category_id string, expected_buyers int").write.format("delta") \
        .partitionBy("snapshot_date", "model_version").save(table_path(warehouse, "category_demand"))
    with pytest.raises(StageFailed, match=r"table 'category_demand' at .* does not match this write: "
                                          r"column 'expected_buyers' is int in the table, double"):
        run_score(spark, _config(project_root, warehouse, tmp_path), loader=load_linear_model)
    assert current_version(spark, table_path(warehouse, "predictions")) is None
    # Refused before any Python worker loaded the model to score (the one load is the driver's).
    assert len((model_dir / "loads.log").read_text().split()) == 1


def test_a_pinned_model_that_is_not_registered_is_named(spark, warehouse, tmp_path, project_root):
    from training.evaluation.stage import evaluate

    write_models_table(spark, warehouse, [("m1", 0.5, str(tmp_path / "m1"), SNAPSHOTS[0], CREATED)])
    cfg = _config(project_root, warehouse, tmp_path, "evaluate.model_version=m9")
    with pytest.raises(StageFailed, match=r"evaluate\.model_version 'm9' is not in the models table "
                                          r"\(versions: \['m1'\]\)"):
        evaluate(spark, cfg)


def test_input_mismatches_accepts_a_fitting_schema(spark):
    schema = spark.createDataFrame([], "user_key string, a long, b string, extra double").schema
    assert input_mismatches({"a": "numeric", "b": "categorical"}, schema) == []
    assert input_mismatches({"b": "numeric"}, schema) == ["column 'b' must be numeric, is string"]


def test_psi_is_zero_for_the_same_population_and_large_for_a_shift(spark):
    base = feature_frame(2000, SNAPSHOTS[0], seed=5)
    same = feature_frame(2000, SNAPSHOTS[1], seed=6)
    shifted = feature_frame(2000, SNAPSHOTS[1], seed=6, shift=3.0).assign(device="tablet")
    frames = [spark.createDataFrame(f.astype(object).where(f.notna(), None).values.tolist(),
                                    "user_key string, snapshot_date date, "
                                    "days_since_last_purchase double, purchases_last_30d long, "
                                    "spend_last_30d double, sessions_last_7d int, region string, "
                                    "device string")
              for f in (base, pd.concat([same, shifted]))]
    kinds = {"sessions_last_7d": "numeric", "days_since_last_purchase": "numeric",
             "device": "categorical", "region": "categorical"}
    profile = reference_profile(frames[0], kinds, bins=10, max_categories=20)
    assert profile.typical["device"] in {"mobile", "desktop"}
    assert profile.typical["sessions_last_7d"] == pytest.approx(3.0, abs=1.0)
    current = frames[1]
    same_df = current.where(F.col("device") != "tablet")
    shifted_df = current.where(F.col("device") == "tablet")
    stable = {d.feature: d.psi for d in feature_drift(frames[0], same_df, profile, 0.2)}
    moved = {d.feature: d.psi for d in feature_drift(frames[0], shifted_df, profile, 0.2)}
    assert max(stable.values()) < 0.05
    assert moved["sessions_last_7d"] > 0.5 and moved["device"] > 1.0
    assert moved["region"] < 0.05
    # The formula on hand-made counts, shares smoothed by half a row per bin.
    assert psi({"a": 50, "b": 50}, {"a": 50, "b": 50}) == 0.0
    e, a = (90.5 / 101, 10.5 / 101), (50.5 / 101, 50.5 / 101)
    assert psi({"a": 90, "b": 10}, {"a": 50, "b": 50}) == pytest.approx(
        sum((y - x) * np.log(y / x) for x, y in zip(e, a)))
    # A bin empty on one side: the PSI grows with the evidence instead of jumping to a floor's.
    assert psi({"a": 10}, {"a": 9, "b": 1}) < psi({"a": 1000}, {"a": 900, "b": 100})


def test_bin_counts_of_many_features_match_a_hand_count(spark):
    # 150 numeric inputs (more than a CASE per feature and edge fits in one JVM method) and one
    # categorical: every value lands in the bin counted by hand, null and NaN in the null bin.
    width = 150
    values = [[float(r * (c % 3)) if (r + c) % 7 else None for c in range(width)] for r in range(8)]
    values[0][0] = float("nan")
    devices = ["mobile", "desktop", "tablet", None, "mobile", "mobile", "watch", "desktop"]
    df = spark.createDataFrame([row + [d] for row, d in zip(values, devices)],
                               ", ".join([f"x{c} double" for c in range(width)] + ["device string"]))
    edges = {f"x{c}": (1.0, 4.0) if c % 2 else () for c in range(width)}
    profile = ReferenceProfile(kinds={**{f"x{c}": "numeric" for c in range(width)}, "device": "categorical"},
                               edges=edges, top_values={"device": ("mobile", "desktop")})
    expected: dict[tuple[str, str], int] = {}
    for c in range(width):
        for row in values:
            v = row[c]
            b = NULL_BIN if v is None or v != v else str(sum(v > e for e in edges[f"x{c}"]))
            expected[(f"x{c}", b)] = expected.get((f"x{c}", b), 0) + 1
    for d in devices:
        b = NULL_BIN if d is None else d if d in ("mobile", "desktop") else OTHER_BIN
        expected[("device", b)] = expected.get(("device", b), 0) + 1
    assert bin_counts(df, profile) == expected


def test_replace_where_on_two_partition_columns(spark, warehouse):
    spec = TableSpec("predictions", "t", ("snapshot_date", "model_version"))
    d = dt.date(2026, 1, 1)
    rows = lambda data: spark.createDataFrame(data, "user_key string, snapshot_date date, "
                                                    "model_version string, p double")
    write_table(rows([("a", d, "m1", 0.1), ("a", d, "m2", 0.2)]), warehouse, spec, "append")
    write_table(rows([("a", d, "m1", 0.9)]), warehouse, spec, "replace_partitions",
                replace_where={"snapshot_date": [d], "model_version": ["m1"]})
    got = {(r.model_version, r.p) for r in read_table(spark, warehouse, "predictions").collect()}
    assert got == {("m1", 0.9), ("m2", 0.2)}
    with pytest.raises(ValueError, match="non-partition"):
        write_table(rows([("a", d, "m1", 0.9)]), warehouse, spec, "replace_partitions",
                    replace_where={"p": [0.9]})


def test_model_is_loaded_once_per_process_not_per_batch(scored_world):
    """The fixture's m2 run scored 400 rows in Arrow batches of 64 (7+ batches) and explained a
    subset; every process (driver, Python workers) loaded the model at most once."""
    pids = scored_world["m2_loads"]
    assert len(pids) == len(set(pids))
    # The driver (schema check) plus the worker processes: fewer loads than the 8 batches.
    assert 2 <= len(pids) < 8
