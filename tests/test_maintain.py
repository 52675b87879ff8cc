"""`demandcast maintain` on real Delta tables: OPTIMIZE compacts, VACUUM removes the files of
versions nothing pins and keeps every training_set version a model or an unfinished training
run pins, readable by time travel; the retention lands in the tables' properties."""
from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest
from delta.tables import DeltaTable

from demandcast.config import load_config
from demandcast.tables import current_version, files_of_version, table_path
from demandcast.tables.maintenance import Pin, interval, retention_for


def _local(uri: str) -> Path:
    return Path(urlparse(uri).path)


def _commit_rows(spark, path: str, first: int, files: int, mode: str) -> None:
    (spark.range(first, first + 40, numPartitions=files).selectExpr("id", "id % 7 AS bucket")
     .write.format("delta").mode(mode).save(path))


def _config(project_root: Path, warehouse: str, runs_dir: Path, *extra: str):
    return load_config(project_root / "conf" / "local.yaml", [
        f"warehouse={warehouse}", f"runs_dir={runs_dir}", "maintain.min_retention_hours=0",
        "maintain.pin_margin_hours=0", "maintain.optimize_tables=[events]",
        "maintain.vacuum_tables=[events, training_set, predictions]", *extra])


@pytest.mark.slow
def test_maintain_keeps_pinned_training_sets_and_removes_the_rest(spark, warehouse, tmp_path,
                                                                  project_root):
    from jobs.maintain import run as maintain

    events = table_path(warehouse, "events")
    for batch in range(4):  # daily appends: many small files
        _commit_rows(spark, events, batch * 100, 3, "append")
    events_files = files_of_version(spark, events, current_version(spark, events))

    training_set = table_path(warehouse, "training_set")
    for version in range(5):  # v0 .. v4, each replacing all files of the one before
        _commit_rows(spark, training_set, version * 1000, 2, "overwrite")
    files = {v: files_of_version(spark, training_set, v) for v in range(5)}
    # Model m3 trained on v3; an unfinished run (resumable) on v2; v0 and v1 are pinned by nothing.
    spark.createDataFrame([("m3", 3, training_set)], "model_version string, "
                          "training_set_version long, training_set_path string") \
        .write.format("delta").save(table_path(warehouse, "models"))
    run = tmp_path / "runs" / "train_runs" / "20260101T000000Z-ts2"
    run.mkdir(parents=True)
    (run / "spec.json").write_text(json.dumps(
        {"model_info": {"training_set": {"version": 2, "path": training_set}}}))
    cfg = _config(project_root, warehouse, tmp_path / "runs")

    summary = maintain(cfg)["tables"]

    # OPTIMIZE: 12 small files became fewer; VACUUM at 0 h removed them from storage.
    assert summary["events"]["files_before"] == 12
    assert summary["events"]["files_after"] < 12
    assert summary["events"]["files_removed"] == 12
    assert not any(_local(f).exists() for f in events_files)
    assert spark.read.format("delta").load(events).count() == 160

    # training_set: every version from v2, the oldest pin, on is kept, and the retention says
    # why. Delta's VACUUM counts whole hours, so seconds-old pins keep one hour: v0 and v1 too.
    kept = summary["training_set"]
    assert kept["pinned_versions"] == [2, 3]
    assert kept["retention_hours"] == 1
    assert "version 2 (unfinished training run 20260101T000000Z-ts2) was committed" in kept["why"]
    for version in range(5):
        assert all(_local(f).exists() for f in files[version])
    assert _ids(spark, training_set, 2) == list(range(2000, 2040))
    props = {r.key: r.value for r in spark.sql(f"SHOW TBLPROPERTIES delta.`{training_set}`").collect()}
    assert props["delta.deletedFileRetentionDuration"] == "interval 1 hours"
    assert props["delta.logRetentionDuration"] == "interval 720 hours"  # time travel needs the log
    assert summary["predictions"] == {"skipped": "no such table"}

    # A rerun: nothing left to compact, the events table's properties already say so; its only
    # commits are VACUUM's own log entries.
    events_version = current_version(spark, events)
    again = maintain(cfg)["tables"]
    assert again["events"]["files_added"] == 0 and not again["events"]["properties_changed"]
    later = DeltaTable.forPath(spark, events).history().where(f"version > {events_version}")
    assert {r.operation for r in later.collect()} <= {"VACUUM START", "VACUUM END"}

    # Once the run finished (a result next to its spec) and m3 is deleted, nothing pins the old
    # versions: the 0 h minimum applies and their files go; the current version stays whole.
    (run / "result.json").write_text("{}")
    DeltaTable.forPath(spark, table_path(warehouse, "models")).delete("model_version = 'm3'")
    released = maintain(cfg)["tables"]["training_set"]
    assert released["pinned_versions"] == [] and released["retention_hours"] == 0
    assert not any(_local(f).exists() for v in range(4) for f in files[v])
    assert _ids(spark, training_set, 4) == list(range(4000, 4040))
    with pytest.raises(Exception, match="(?i)not.*exist|FileNotFound|DELTA_FILE_NOT_FOUND"):
        _ids(spark, training_set, 2)


def _ids(spark, path: str, version: int) -> list[int]:
    rows = spark.read.format("delta").option("versionAsOf", version).load(path).collect()
    return sorted(r.id for r in rows)


def test_retention_is_the_minimum_unless_a_pin_is_older():
    now = 1_000_000.0
    old, young = Pin(3, "model a"), Pin(7, "model b")
    fresh = retention_for(168, 720, {young: now - 3600}, now, margin_hours=1)
    assert (fresh.hours, fresh.log_hours) == (168, 720)
    assert "covers the oldest pinned version 7 (model b)" in fresh.why
    aged = retention_for(168, 720, {old: now - 40 * 86400, young: now - 3600, Pin(1, "gone"): None},
                         now, margin_hours=1)
    assert aged.hours == 40 * 24 + 1
    assert aged.log_hours == aged.hours  # time travel needs the log as long as the files
    assert aged.why.startswith("version 3 (model a) was committed 960.00 h ago")
    assert interval(aged.hours) == "interval 961 hours"
    assert retention_for(0, 0, {young: now - 60}, now, margin_hours=0).hours == 1  # whole hours
