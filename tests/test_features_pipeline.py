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
from features.assemble import snapshot_aggregates_from_files, snapshot_frame, user_features
from features.catalog import FeatureSpec
from features.daily import item_context, user_daily_aggregates
from features.feature_tables import (direct_event_files, direct_user_daily, readable_users,
                                     update_user_daily, write_snapshots)
from features.labels import label_sums, labels
from features_data import EVENTS, events_frame, random_inputs, write_inputs
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
    from jobs.features import run

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
    assert reference.differences(built["features"], expected, KEYS, abs_tol=1e-6) == []

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
    files = direct_user_daily(spark, warehouse, spec)[0]
    one_by_one = pd.concat([
        user_features(daily, users, [s], spec, aggregates=snapshot_aggregates_from_files(
            spark, files.source, files.rows_per_date, [s], spec)).toPandas()
        for s in (S1, S2)])
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


def test_user_daily_read_through_spark_and_split_into_user_groups_is_the_same(spark, built):
    """The job read the event files directly (features.table_files); Spark's reader with the
    shuffle by date, each day split into user groups (features.daily_user_groups, for days too
    big for one worker), must give the same rows."""
    warehouse, spec = built["warehouse"], FeatureSpec()
    assert direct_event_files(spark, warehouse, [S1 - dt.timedelta(days=1)], spec)[0] is not None
    whole_days = read_table(spark, warehouse, "user_daily")
    split = user_daily_aggregates(read_table(spark, warehouse, "events"),
                                  item_context(read_table(spark, warehouse, "items")), spec.roles,
                                  user_groups=7)
    assert split.count() == whole_days.count() > 100
    assert split.exceptAll(whole_days.select(*split.columns)).count() == 0


def test_snapshot_summed_through_spark_is_the_same(spark, built):
    """The job summed user_daily's files per range of users with numpy
    (features.snapshot_aggregates); Spark's aggregation of user_daily must give the same feature
    and label rows (doubles to 1e-9: the entropy's logarithms are Java's there, numpy's here)."""
    warehouse, spec = built["warehouse"], FeatureSpec()
    daily = read_table(spark, warehouse, "user_daily")
    files, why_not = direct_user_daily(spark, warehouse, spec)
    assert files is not None, why_not
    through_spark = (user_features(daily, read_table(spark, warehouse, "users"), [S1, S2], spec)
                     .toPandas().sort_values(KEYS).reset_index(drop=True))
    pd.testing.assert_frame_equal(through_spark, built["features"], check_exact=False, rtol=1e-9)
    population = read_table(spark, warehouse, "user_features").select(*KEYS)
    spark_labels = labels(population, label_sums(daily, snapshot_frame(spark, [S1, S2]), 30))
    pd.testing.assert_frame_equal(spark_labels.toPandas().sort_values(KEYS).reset_index(drop=True),
                                  built["labels"])
    assert built["labels"].label_category_spend.map(len).sum() > 10


def test_deleted_events_are_not_counted_when_deletion_vectors_hide_them(spark, tmp_path):
    """With deletion vectors on events the files hold rows the table does not: user_daily must
    read through Spark then (a direct read would count the deleted event)."""
    from delta.tables import DeltaTable

    warehouse = str(tmp_path / "warehouse")
    events, users, items = random_inputs(seed=3, n_users=5, n_events=200,
                                         start=dt.date(2026, 1, 1), days=3)
    write_inputs(spark, warehouse, events, users, items)
    path = table_path(warehouse, "events")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    deleted = events.iloc[0]
    DeltaTable.forPath(spark, path).delete(F.col("event_id") == deleted.event_id)
    source, why_not = direct_event_files(spark, warehouse, [deleted.event_time.date()], FeatureSpec())
    assert source is None and "deletion vectors" in why_not
    update_user_daily(spark, warehouse, FeatureSpec())
    counted = read_table(spark, warehouse, "user_daily").agg(F.sum("events")).first()[0]
    assert counted == len(events) - 1


def test_users_hidden_by_deletion_vectors_are_joined_through_spark(spark, tmp_path):
    """The snapshot's workers join the users dimension from its files; with deletion vectors on
    users the files hold a record the table does not, and Spark joins them instead."""
    from delta.tables import DeltaTable

    warehouse = str(tmp_path / "warehouse")
    events, users, items = random_inputs(seed=5, n_users=6, n_events=300,
                                         start=dt.date(2026, 1, 1), days=20)
    write_inputs(spark, warehouse, events, users, items)
    assert readable_users(spark, warehouse, read_table(spark, warehouse, "users"))[0] is not None
    path = table_path(warehouse, "users")
    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableDeletionVectors' = 'true')")
    gone = events.user_key.iloc[0]
    DeltaTable.forPath(spark, path).delete(F.col("user_key") == gone)
    files, why_not = readable_users(spark, warehouse, read_table(spark, warehouse, "users"))
    assert files is None and "deletion vectors" in why_not
    spec = FeatureSpec()
    daily = update_user_daily(spark, warehouse, spec)
    snapshot = dt.date(2026, 1, 21)
    result = write_snapshots(spark, warehouse, [snapshot], spec, daily.last_event_date,
                             require_complete_labels=False)
    assert result["rows_without_user_record"] == {snapshot.isoformat(): 1}
    rows = {r.user_key: r for r in read_table(spark, warehouse, "user_features").collect()}
    assert rows[gone].region is None and rows[gone].days_since_signup is None
    region = users.set_index("user_key").region.where(lambda r: r.notna(), None).to_dict()
    assert {k: r.region for k, r in rows.items() if k != gone} == {k: region[k] for k in rows if k != gone}


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
