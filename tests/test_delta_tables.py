"""The shared Delta write helpers on a real local Delta table."""
from __future__ import annotations

import datetime as dt
import shutil
import threading
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from demandcast.errors import StageFailed
from demandcast.tables import (TableSpec, current_version, files_of_version, merge_table,
                               partition_predicate, read_table, rolled_back_on_failure, table_path,
                               write_table)

SPEC = TableSpec(
    name="user_daily",
    comment="test table",
    partition_by=("day",),
    column_comments={"amount": "spend of the day"},
    properties={"delta.enableDeletionVectors": "false"},
)


def _rows(spark, rows):
    return spark.createDataFrame(rows, "user string, day date, amount double")


D1, D2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)


def test_write_update_and_time_travel(spark, warehouse):
    v_first = write_table(_rows(spark, [("a", D1, 1.0), ("b", D2, 2.0)]), warehouse, SPEC, "overwrite")
    v_second = write_table(_rows(spark, [("a", D1, 5.0)]), warehouse, SPEC, "replace_partitions", [D1])
    assert v_second == v_first + 1

    now = {(r.user, r.day): r.amount for r in read_table(spark, warehouse, "user_daily").collect()}
    assert now == {("a", D1): 5.0, ("b", D2): 2.0}
    before = {(r.user, r.day): r.amount
              for r in read_table(spark, warehouse, "user_daily", version=v_first).collect()}
    assert before == {("a", D1): 1.0, ("b", D2): 2.0}


def test_table_documentation_and_properties(spark, warehouse):
    write_table(_rows(spark, [("a", D1, 1.0)]), warehouse, SPEC, "overwrite")
    path = table_path(warehouse, "user_daily")
    detail = spark.sql(f"DESCRIBE DETAIL delta.`{path}`").first()
    assert detail.description == "test table"
    assert detail.partitionColumns == ["day"]
    assert detail.properties.get("delta.enableDeletionVectors") == "false"
    comments = {r.col_name: r.comment for r in spark.sql(f"DESCRIBE TABLE delta.`{path}`").collect()}
    assert comments["amount"] == "spend of the day"


def test_insert_only_merge_is_exactly_once(spark, warehouse):
    batch = _rows(spark, [("a", D1, 1.0), ("b", D1, 2.0)])
    merge_table(batch, warehouse, SPEC, keys=["user", "day"], update_matched=False, partition_values=[D1])
    merge_table(batch.union(_rows(spark, [("c", D2, 3.0)])), warehouse, SPEC,
                keys=["user", "day"], update_matched=False, partition_values=[D1, D2])
    got = sorted((r.user, r.amount) for r in read_table(spark, warehouse, "user_daily").collect())
    assert got == [("a", 1.0), ("b", 2.0), ("c", 3.0)]


def test_pinned_version_files_come_from_the_log(spark, warehouse):
    v0 = write_table(_rows(spark, [("a", D1, 1.0)]), warehouse, SPEC, "overwrite")
    files_v0 = files_of_version(spark, table_path(warehouse, "user_daily"), v0)
    write_table(_rows(spark, [("z", D1, 9.0)]), warehouse, SPEC, "overwrite")
    # The old file stays on disk (no VACUUM) but version v0 still lists only its own files.
    assert files_of_version(spark, table_path(warehouse, "user_daily"), v0) == files_v0
    rows = spark.read.parquet(*files_v0).select("user").collect()
    assert [r.user for r in rows] == ["a"]
    assert current_version(spark, table_path(warehouse, "user_daily")) == v0 + 1


def test_a_table_of_another_schema_is_one_line_and_left_alone(spark, warehouse):
    """A table an older job (or a person) wrote with another schema: the write says how they
    differ in one line instead of Delta's page-long AnalysisException, and commits nothing."""
    path = table_path(warehouse, "user_daily")
    spark.createDataFrame([("a", D1, "1.0")], "user string, day date, amount string") \
        .write.format("delta").save(path)
    with pytest.raises(StageFailed, match=r"^table 'user_daily' at .* does not match this write: "
                                          r"column 'amount' is string in the table, double in this "
                                          r"write; partitioned by \[\], this job writes \['day'\]\. "
                                          r"Nothing was written"):
        write_table(_rows(spark, [("a", D1, 5.0)]), warehouse, SPEC, "replace_partitions", [D1])
    assert current_version(spark, path) == 0


def test_partition_predicate_refuses_injection():
    assert partition_predicate("day", [D1]) == "day IN ('2026-01-01')"
    with pytest.raises(ValueError):
        partition_predicate("day", ["2026-01-01') OR (1=1"])
    with pytest.raises(ValueError):
        partition_predicate("day; DROP", [D1])


def test_unknown_table_name_is_refused(warehouse):
    from demandcast.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown table"):
        table_path(warehouse, "../../etc")


def test_failed_write_leaves_last_good_version(spark, warehouse):
    write_table(_rows(spark, [("a", D1, 1.0)]), warehouse, SPEC, "overwrite")
    path = table_path(warehouse, "user_daily")
    before = current_version(spark, path)
    bad = _rows(spark, [("a", D1, 1.0)]).withColumn(
        "amount", F.expr("CAST(raise_error('boom') AS DOUBLE)"))
    with pytest.raises(Exception, match="boom"):
        write_table(bad, warehouse, SPEC, "overwrite")
    assert current_version(spark, path) == before
    assert read_table(spark, warehouse, "user_daily").count() == 1

    # A job that fails after creating a table removes it and raises its own error (restoring an
    # existing table: tests/test_training_data.py, a failed train run).
    created = str(Path(warehouse).parent / "created")
    with pytest.raises(KeyError, match="after the write"):
        with rolled_back_on_failure("test job"):
            write_table(_rows(spark, [("c", D1, 3.0)]), created, SPEC, "overwrite")
            raise KeyError("after the write")
    assert not Path(table_path(created, "user_daily")).exists()
    # Nothing of the removed table lingers in the session: it can be created again.
    assert write_table(_rows(spark, [("c", D1, 3.0)]), created, SPEC, "overwrite") == 1


def test_a_table_another_job_is_creating_is_written_once_its_first_commit_lands(spark, warehouse, tmp_path):
    # Another job has made the table's _delta_log but not yet put version 0 (the state the
    # concurrent-scoring race hit): Delta says "table not found" until the commit lands.
    elsewhere = str(tmp_path / "elsewhere")
    write_table(_rows(spark, [("b", D2, 2.0)]), elsewhere, SPEC, "overwrite")
    first_commit = Path(table_path(elsewhere, "user_daily")) / "_delta_log" / f"{0:020d}.json"
    log_dir = Path(table_path(warehouse, "user_daily")) / "_delta_log"
    log_dir.mkdir(parents=True)
    other_job = threading.Timer(1.5, lambda: shutil.copy(first_commit, log_dir / first_commit.name))
    other_job.start()
    try:
        version = write_table(_rows(spark, [("a", D1, 1.0)]), warehouse, SPEC, "append")
    finally:
        other_job.join()
    assert version == 1
    got = sorted((r.user, r.amount) for r in read_table(spark, warehouse, "user_daily").collect())
    assert got == [("a", 1.0)]  # the other job's version 0 created the empty table
