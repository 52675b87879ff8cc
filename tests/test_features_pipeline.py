"""The features job on generated data: equality with an independent DuckDB implementation
(every user, every column), backfill = one by one, idempotent re-runs, incremental user_daily,
and no leakage of events at or after the snapshot."""
from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from pyspark.sql import functions as F

from demandcast.config import load_config
from demandcast.tables import current_version, files_of_version, read_table, table_path, write_table
from features.assemble import user_features
from features.families import btyd
from features.feature_spec import FeatureSpec
from features.daily import user_daily_rows
from features.feature_tables import update_user_daily, write_snapshots
from features_data import EVENTS, EVENTS_SCHEMA, USERS, events_frame, random_inputs, write_inputs
from reference import duckdb_features as reference

S1, S2 = dt.date(2026, 3, 1), dt.date(2026, 4, 1)
KEYS = ["user_key", "snapshot_date"]
NOT_IN_USERS = ["u0001", "u0005", "u0033"]


def table_pandas(spark, warehouse: str, name: str, snapshots=None) -> pd.DataFrame:
    df = read_table(spark, warehouse, name)
    if snapshots:
        df = df.where(F.col("snapshot_date").isin(snapshots))
    return df.toPandas().sort_values(KEYS).reset_index(drop=True)


def as_pairs(labels: pd.DataFrame) -> pd.DataFrame:
    rows = [(r.user_key, r.snapshot_date, c, v) for r in labels.itertuples()
            for c, v in (r.label_category_spend or {}).items()]
    return pd.DataFrame(rows, columns=["user_key", "snapshot_date", "category_id", "spend"])


@pytest.fixture(scope="module")
def built(spark, tmp_path_factory):
    """Generated inputs and one run of the features job over a two-snapshot range."""
    from jobs.build_features import run

    warehouse = str(tmp_path_factory.mktemp("pipeline") / "warehouse")
    events, users, items = random_inputs(seed=7, n_users=60, n_events=3000,
                                         start=dt.date(2025, 12, 1), days=180)
    # Users with events but no record in the users dimension (a late or partial users export).
    users = users[~users.user_key.isin(NOT_IN_USERS)]
    write_inputs(spark, warehouse, events, users, items)
    cfg = load_config("conf/local.yaml", [
        f"warehouse={warehouse}", f"features.range_start={S1}", f"features.range_end={S2}",
        "features.range_step_days=31", "label_window_days=30"])
    summary = run(cfg)
    return {"warehouse": warehouse, "summary": summary,
            "features": table_pandas(spark, warehouse, "user_features"),
            "labels": table_pandas(spark, warehouse, "labels")}


def test_job_summary(built):
    s = built["summary"]
    assert s["snapshots"] == [str(S1), str(S2)]
    assert s["labels_skipped"] == []
    assert s["user_daily_dates_processed"] == 180
    assert set(built["features"]["snapshot_date"]) == {S1, S2}
    assert len(built["features"]) == len(built["labels"]) > 20
    features = built["features"]
    without_user = features[features.user_key.isin(NOT_IN_USERS)].groupby("snapshot_date").size()
    assert s["rows_without_user_record"] == {str(d): int(n) for d, n in without_user.items()}
    assert all(without_user.get(d, 0) > 0 for d in (S1, S2))


def test_equals_independent_duckdb_implementation(spark, built):
    warehouse, spec = built["warehouse"], FeatureSpec()
    files = {name: files_of_version(spark, table_path(warehouse, name),
                                    current_version(spark, table_path(warehouse, name)))
             for name in ("events", "users", "items")}
    con = reference.connect()
    reference.register_inputs(con, files["events"], files["users"], files["items"])

    expected = reference.features(con, [S1, S2], spec)
    # The BTYD features come out of a numerical fit: inputs equal to the last bits (sums of
    # spend) give parameters equal to the optimiser's tolerance, not to 1e-9.
    fitted = [f.name for f in btyd.definitions(spec)]
    assert reference.differences(built["features"].drop(columns=fitted), expected.drop(columns=fitted),
                                 KEYS, abs_tol=1e-6) == []
    assert reference.differences(built["features"][KEYS + fitted], expected[KEYS + fitted], KEYS,
                                 rel_tol=1e-4, abs_tol=1e-6) == []
    # the world has customers enough for every model: the fitted values are compared, not nulls
    assert expected[fitted].notna().sum().min() > 20

    expected_labels, expected_category_spend = reference.labels(con, [S1, S2], 30, spec)
    actual_labels = built["labels"].drop(columns=["label_category_spend"])
    assert reference.differences(actual_labels, expected_labels, KEYS) == []
    assert reference.differences(as_pairs(built["labels"]), expected_category_spend,
                                 KEYS + ["category_id"]) == []
    # the comparison is not vacuous: a changed value is found
    broken = expected.copy()
    broken.loc[0, "views_last_90d"] += 1
    assert reference.differences(built["features"], broken, KEYS)


def test_backfill_equals_snapshots_one_by_one(spark, built):
    warehouse, spec = built["warehouse"], FeatureSpec()
    daily = read_table(spark, warehouse, "user_daily")
    users = read_table(spark, warehouse, "users")
    one_by_one = pd.concat([user_features(daily, users, [s], spec).toPandas() for s in (S1, S2)])
    assert reference.differences(built["features"], one_by_one, KEYS, 0, 0) == []


def test_rerun_leaves_tables_identical(spark, built):
    warehouse, spec = built["warehouse"], FeatureSpec()
    before = current_version(spark, table_path(warehouse, "user_features"))
    daily = update_user_daily(spark, warehouse, spec)
    assert daily.processed_dates == []
    write_snapshots(spark, warehouse, [S2, S1], spec, daily.last_event_date)
    assert current_version(spark, table_path(warehouse, "user_features")) == before + 1
    pd.testing.assert_frame_equal(table_pandas(spark, warehouse, "user_features"), built["features"])
    pd.testing.assert_frame_equal(table_pandas(spark, warehouse, "labels"), built["labels"])


def test_last_device_without_a_vocabulary_is_the_same(spark, built):
    """The job packs (time, device) into a long to find the last device; with too many devices
    to pack, a max over a struct must give the same rows."""
    warehouse, spec = built["warehouse"], FeatureSpec()
    events = read_table(spark, warehouse, "events")
    stored = read_table(spark, warehouse, "user_daily")
    unpacked = user_daily_rows(events, read_table(spark, warehouse, "items"), spec.roles, None)
    assert unpacked.count() == stored.count() > 100
    assert unpacked.exceptAll(stored.select(*unpacked.columns)).count() == 0
    features = (user_features(stored, read_table(spark, warehouse, "users"), [S1, S2], spec, None)
                .toPandas())
    assert reference.differences(features, built["features"], KEYS, 0, 0) == []


def test_events_deleted_later_are_taken_out_of_user_daily(spark, tmp_path):
    """A delete in events (a user's erasure request, with deletion vectors on) reaches user_daily
    through the change feed: the date is recomputed without the deleted event."""
    from delta.tables import DeltaTable

    warehouse = str(tmp_path / "warehouse")
    events, users, items = random_inputs(seed=3, n_users=5, n_events=200,
                                         start=dt.date(2026, 1, 1), days=3)
    write_inputs(spark, warehouse, events, users, items)
    update_user_daily(spark, warehouse, FeatureSpec())
    path = table_path(warehouse, "events")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    deleted = events.iloc[0]
    DeltaTable.forPath(spark, path).delete(F.col("event_id") == deleted.event_id)
    update = update_user_daily(spark, warehouse, FeatureSpec())
    assert update.processed_dates == [deleted.event_time.date()]
    assert update.how.startswith("change data feed")
    counted = read_table(spark, warehouse, "user_daily").agg(F.sum("events")).first()[0]
    assert counted == len(events) - 1


def test_a_snapshot_sees_the_user_attributes_known_before_it(spark, tmp_path):
    """Users keep history (valid_from inclusive, valid_to exclusive): a snapshot at D takes the
    version valid on D - 1, so a backfilled snapshot never sees a later change; a user whose
    first version starts on D or later has no attributes at D."""
    warehouse = str(tmp_path / "warehouse")
    events, users, items = random_inputs(seed=5, n_users=6, n_events=300,
                                         start=dt.date(2026, 1, 1), days=20)
    write_inputs(spark, warehouse, events, users, items)
    changed, late = sorted(set(events.user_key))[:2]
    snapshot = dt.date(2026, 1, 21)
    history = users.assign(valid_from=dt.date(2025, 1, 1), valid_to=None)
    history.loc[history.user_key == changed, "valid_to"] = snapshot - dt.timedelta(days=1)
    moved = history[history.user_key == changed].assign(region="moved", valid_from=snapshot - dt.timedelta(days=1),
                                                        valid_to=snapshot)
    future = history[history.user_key == changed].assign(region="future", valid_from=snapshot, valid_to=None)
    history.loc[history.user_key == late, "valid_from"] = snapshot
    rows = pd.concat([history, moved, future], ignore_index=True)
    write_table(spark.createDataFrame(rows, "user_key string, signup_date date, region string, age_band string, "
                                      "gender string, valid_from date, valid_to date"),
                warehouse, USERS, "overwrite")
    spec = FeatureSpec()
    daily = update_user_daily(spark, warehouse, spec)
    result = write_snapshots(spark, warehouse, [snapshot], spec, daily.last_event_date,
                             require_complete_labels=False)
    assert result["rows_without_user_record"] == {snapshot.isoformat(): 1}
    features = {r.user_key: r for r in read_table(spark, warehouse, "user_features").collect()}
    assert features[changed].region == "moved"
    assert features[late].region is None and features[late].days_since_signup is None


def test_a_source_without_dimensions_runs_with_their_features_null(spark, tmp_path):
    """Most transaction exports come without users or items: features still run; the user
    attributes and the promotion share are null, categories come from the events alone."""
    from jobs.build_features import run

    warehouse = str(tmp_path / "warehouse")
    events, _, _ = random_inputs(seed=11, n_users=20, n_events=800, start=dt.date(2026, 1, 1), days=40)
    write_table(spark.createDataFrame(events, EVENTS_SCHEMA), warehouse, EVENTS, "append")
    cfg = load_config("conf/local.yaml", [f"warehouse={warehouse}", "snapshot_dates=[2026-02-01]",
                                          "label_window_days=7"])
    summary = run(cfg)
    assert summary["labels_skipped"] == []
    features = read_table(spark, warehouse, "user_features").toPandas()
    assert len(features) > 10
    assert features[["region", "age_band", "days_since_signup"]].isna().all().all()
    assert features["share_bought_on_promotion_last_365d"].isna().all()
    assert features["top_category_1"].notna().any()
    assert read_table(spark, warehouse, "labels").count() == len(features)


def test_late_events_at_or_after_the_snapshot_do_not_change_it(spark, built):
    """Runs last: appends a late batch to events, then recomputes S1 incrementally."""
    warehouse, spec = built["warehouse"], FeatureSpec()
    user = built["features"].query("snapshot_date == @S1").user_key.iloc[0]
    midnight = dt.datetime.combine(S1, dt.time())
    late = events_frame(spark, [
        dict(event_id="late1", user_key=user, event_time=midnight, event_type="purchase",
             price=1000.0, batch_id="late"),
        dict(event_id="late2", user_key=user, event_time=midnight + dt.timedelta(days=3, hours=5),
             event_type="view", batch_id="late"),
        dict(event_id="late3", user_key="brand-new-user", event_time=midnight + dt.timedelta(hours=1),
             event_type="purchase", batch_id="late"),
    ])
    write_table(late, warehouse, EVENTS, "append")

    daily = update_user_daily(spark, warehouse, spec)
    assert daily.processed_dates == [S1, S1 + dt.timedelta(days=3)]
    write_snapshots(spark, warehouse, [S1], spec, daily.last_event_date)

    features_s1 = table_pandas(spark, warehouse, "user_features", [S1])
    expected = built["features"].query("snapshot_date == @S1").reset_index(drop=True)
    pd.testing.assert_frame_equal(features_s1, expected)
    labels_s1 = table_pandas(spark, warehouse, "labels", [S1]).set_index("user_key")
    before = built["labels"].query("snapshot_date == @S1").set_index("user_key")
    assert labels_s1.loc[user, "label_spend"] == pytest.approx(before.loc[user, "label_spend"] + 1000.0)
    assert "brand-new-user" not in labels_s1.index
    # S2 was not rewritten and still holds the same rows
    pd.testing.assert_frame_equal(table_pandas(spark, warehouse, "user_features", [S2]),
                                  built["features"].query("snapshot_date == @S2").reset_index(drop=True))
