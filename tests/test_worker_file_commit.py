"""user_daily, user_features and labels written by the Python workers and committed by the
driver (features.daily.write_user_daily_files, features.feature_tables.written_by_workers,
demandcast.tables.replace_partitions_with_files): the same tables as Spark's writer makes,
commits that replace only the changed dates, a fallback to Spark's writer when the table needs
it, NOT NULL columns enforced, and nothing committed when writing the files fails."""
from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path

import pytest

from demandcast.errors import StageFailed
from demandcast.tables import (current_version, file_commit_refusal, files_of_version, read_table,
                               replace_partitions_with_files, table_path, write_table)
from features.catalog import FeatureSpec
from features.daily import USER_DAILY_SCHEMA
from features.feature_tables import (LABELS, USER_DAILY, update_user_daily, write_snapshots,
                                     written_by_workers as written_by_workers_of)
from features_data import EVENTS, EVENTS_SCHEMA, random_inputs, write_inputs

START = dt.date(2026, 1, 1)
LATE_DATE = START + dt.timedelta(days=3)


def same_rows(spark, one: str, other: str) -> None:
    a, b = read_table(spark, one, "user_daily"), read_table(spark, other, "user_daily")
    assert a.schema == b.schema  # names, types, nullability and the column comments
    assert a.count() == b.count() > 50
    assert a.exceptAll(b).count() == 0 and b.exceptAll(a).count() == 0


def written_by_workers(file: str) -> bool:
    """Spark's writer names a data file part-<task number>-<uuid>, features.table_files part-<uuid>."""
    return re.search(r"/part-[0-9a-f]{8}-[0-9a-f]{4}-", file) is not None


def log_record_counts(spark, warehouse: str, version: int) -> int:
    """Rows the Delta log's add actions of one commit say they hold (numRecords statistics)."""
    commit = Path(table_path(warehouse, "user_daily")) / "_delta_log" / f"{version:020d}.json"
    adds = spark.read.json(str(commit)).where("add IS NOT NULL").select("add.stats").collect()
    return sum(json.loads(r.stats)["numRecords"] for r in adds)


def test_worker_files_make_the_table_spark_writes_and_reruns_replace_only_changed_dates(spark, tmp_path):
    events, users, items = random_inputs(seed=11, n_users=25, n_events=800, start=START, days=8)
    direct, through_spark = str(tmp_path / "direct"), str(tmp_path / "spark")
    for warehouse in (direct, through_spark):
        write_inputs(spark, warehouse, events, users, items)
    first = update_user_daily(spark, direct, FeatureSpec())
    assert all(written_by_workers(f) for f in files_of_version(spark, table_path(direct, "user_daily"), first.version))
    update_user_daily(spark, through_spark, FeatureSpec(daily_write="spark"))
    same_rows(spark, direct, through_spark)
    assert log_record_counts(spark, direct, first.version) == read_table(spark, direct, "user_daily").count()

    # Late events of one date: only that date's file is replaced, in one commit.
    late = events[events.event_time.dt.date == LATE_DATE].head(5).copy()
    late["event_id"] = late.event_id + "-late"
    for warehouse in (direct, through_spark):
        write_table(spark.createDataFrame(late, EVENTS_SCHEMA), warehouse, EVENTS, "append")
    again = update_user_daily(spark, direct, FeatureSpec())
    update_user_daily(spark, through_spark, FeatureSpec(daily_write="spark"))
    assert again.processed_dates == [LATE_DATE] and again.version == first.version + 1
    path = table_path(direct, "user_daily")
    changed = set(files_of_version(spark, path, first.version)) ^ set(files_of_version(spark, path, again.version))
    assert len(changed) == 2 and all(f"event_date={LATE_DATE}" in f for f in changed)
    same_rows(spark, direct, through_spark)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}` LIMIT 1").first()
    assert history.operation == "WRITE" and str(LATE_DATE) in history.operationParameters["predicate"]


def test_a_table_that_needs_spark_writer_is_written_through_spark(spark, tmp_path):
    """A CHECK constraint is Spark's writer's to enforce: the files path steps aside, says why,
    and the update still lands (through Spark)."""
    events, users, items = random_inputs(seed=12, n_users=10, n_events=300, start=START, days=4)
    warehouse = str(tmp_path / "warehouse")
    write_inputs(spark, warehouse, events, users, items)
    update_user_daily(spark, warehouse, FeatureSpec())
    path = table_path(warehouse, "user_daily")
    spark.sql(f"ALTER TABLE delta.`{path}` ADD CONSTRAINT some_events CHECK (events > 0)")
    assert "CHECK constraints" in file_commit_refusal(spark, path)
    late = events.head(3).copy()
    late["event_id"] = late.event_id + "-late"
    write_table(spark.createDataFrame(late, EVENTS_SCHEMA), warehouse, EVENTS, "append")
    before = current_version(spark, path)
    update_user_daily(spark, warehouse, FeatureSpec())
    assert current_version(spark, path) == before + 1
    new_files = set(files_of_version(spark, path, before + 1)) - set(files_of_version(spark, path, before))
    assert new_files and not any(written_by_workers(f) for f in new_files)
    total = read_table(spark, warehouse, "user_daily").groupBy().sum("events").first()[0]
    assert total == len(events) + len(late)

    spark.sql(f"ALTER TABLE delta.`{path}` SET TBLPROPERTIES ('delta.enableChangeDataFeed' = 'true')")
    assert "changeDataFeed" in file_commit_refusal(spark, path)


def test_a_failed_file_write_commits_nothing(spark, tmp_path):
    events, users, items = random_inputs(seed=13, n_users=10, n_events=300, start=START, days=4)
    warehouse = str(tmp_path / "warehouse")
    write_inputs(spark, warehouse, events, users, items)
    first = update_user_daily(spark, warehouse, FeatureSpec())
    written = []

    def fail_after_writing(root: str, not_null) -> list[str]:
        folder = Path(root.removeprefix("file:")) / f"event_date={START}"
        stray = folder / "part-stray.c000.snappy.parquet"
        stray.write_bytes(b"not parquet")
        written.append(stray)
        raise RuntimeError("a worker died")

    with pytest.raises(RuntimeError, match="a worker died"):
        replace_partitions_with_files(spark, warehouse, USER_DAILY,
                                      spark.createDataFrame([], USER_DAILY_SCHEMA),
                                      fail_after_writing, [START])
    path = table_path(warehouse, "user_daily")
    assert written and current_version(spark, path) == first.version
    assert not any("stray" in f for f in files_of_version(spark, path, first.version))
    assert read_table(spark, warehouse, "user_daily").count() > 0  # the stray file is not read

    wrong = spark.createDataFrame([], USER_DAILY_SCHEMA.replace("events int", "events string"))
    with pytest.raises(StageFailed, match="column 'events' is int in the table, string"):
        replace_partitions_with_files(spark, warehouse, USER_DAILY, wrong, fail_after_writing, [START])
    assert len(written) == 1  # refused before any file was written


def comparable(df):
    """Maps as JSON text: set operations refuse map columns."""
    from pyspark.sql import functions as F

    return df.select(*[F.to_json(c).alias(c) if t.startswith("map") else c for c, t in df.dtypes])


def test_snapshot_tables_written_by_workers_are_the_tables_spark_writes(spark, tmp_path):
    """user_features and labels: the workers' files (the default) and Spark's writer
    (features.snapshot_write: spark) give the same rows and the same schema, comments included;
    a null in a NOT NULL column fails the workers' write."""
    from pyspark.sql import functions as F

    events, users, items = random_inputs(seed=14, n_users=40, n_events=1000, start=START, days=24)
    warehouse = str(tmp_path / "warehouse")
    write_inputs(spark, warehouse, events, users, items)
    daily = update_user_daily(spark, warehouse, FeatureSpec())
    snapshots = [START + dt.timedelta(days=16)]
    versions = {}
    for writer in ("files", "spark"):
        versions[writer] = write_snapshots(spark, warehouse, snapshots, FeatureSpec(snapshot_write=writer),
                                           daily.last_event_date, require_complete_labels=False)
    for name in ("user_features", "labels"):
        by_workers, by_spark = (read_table(spark, warehouse, name, version=versions[w][f"{name}_version"])
                                for w in ("files", "spark"))
        assert by_workers.schema == by_spark.schema
        assert by_workers.count() == by_spark.count() > 20
        assert comparable(by_workers).exceptAll(comparable(by_spark)).count() == 0
        path = table_path(warehouse, name)
        assert all(written_by_workers(f) for f in files_of_version(spark, path, versions["files"][f"{name}_version"]))
        assert not any(written_by_workers(f) for f in files_of_version(spark, path, versions["spark"][f"{name}_version"]))

    # A NOT NULL column does not send the write to Spark's writer: the workers check it as
    # Spark's writer would, and the table stays at its version.
    table = read_table(spark, warehouse, "labels")
    assert not table.schema["label_purchased"].nullable
    bad = table.withColumn("label_purchased", F.when(F.col("label_purchased") == 0, F.lit(None))
                           .otherwise(F.col("label_purchased")))
    with pytest.raises(Exception, match="NOT NULL column 'label_purchased' would get"):
        replace_partitions_with_files(spark, warehouse, LABELS, bad,
                                      written_by_workers_of(bad, "snapshot_date"), snapshots)
    assert current_version(spark, table_path(warehouse, "labels")) == versions["spark"]["labels_version"]
